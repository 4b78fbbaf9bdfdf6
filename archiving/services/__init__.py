"""The archiving app's services, one module per concern; commands, receivers and the API call them."""
