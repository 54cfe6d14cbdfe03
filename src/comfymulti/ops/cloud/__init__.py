"""Workshop lifecycle on the GPU cloud (Verda): days and seasons as plans, state and costs.

verda.py is the only importer of the SDK; state.py records every resource we create; day.py and
season.py build plans of idempotent steps; costs.py prices what was recorded."""
