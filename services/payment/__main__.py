from services.payment.bootstrap import run

run()
