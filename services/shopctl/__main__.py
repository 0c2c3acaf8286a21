from services.shopctl.cli import main

main()
