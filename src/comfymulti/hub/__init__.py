"""The hub: one always-on process serving every participant's workspace and the job queue.

    app.py, context.py   assembly
    api/                 the hub's own routes (health, jobs, admin, templates, /worker/v1)
    workspaces/          ComfyUI-compatible routes under /u/<user>/ and the frontend
    services/            accounts, worker credentials, templates (no HTTP)
    web/                 plumbing: access, bodies, errors, sessions, rate limits
"""
