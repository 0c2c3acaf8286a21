from services.credit.bootstrap import run

run()
