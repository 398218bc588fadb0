from order_processor.cli import main

main()
