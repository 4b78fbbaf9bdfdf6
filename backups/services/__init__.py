"""The backups app's services, one module per concern; commands, jobs, views and the API call them."""
