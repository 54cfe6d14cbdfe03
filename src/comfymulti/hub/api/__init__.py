"""The hub's own HTTP routes: health, the job API for scripts, admin, templates, /worker/v1."""
