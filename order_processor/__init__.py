"""In-store order sync: the core that turns an ERP order message into deliveries.

Kept free of Azure Functions types so the function adapter, the CLI, the bench and the tests all
run the same code. Entry point: `order_processor.processor.Processor`.
"""
