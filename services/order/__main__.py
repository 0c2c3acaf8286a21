from services.order.bootstrap import run

run()
