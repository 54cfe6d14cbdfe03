"""What the hub does, without HTTP: accounts, worker credentials, workshop templates.
Routes and the CLI call these; they never import a route."""
