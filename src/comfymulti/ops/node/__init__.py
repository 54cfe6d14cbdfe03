"""A rented GPU machine made into a worker: its startup script and `node bootstrap`."""
