"""What a worker's ComfyUI offers (node types, model files) and what a prompt needs from it.

Shared by the hub (stores catalogs, checks prompts), the queue (matches jobs to workers) and
the worker (reports its catalog):

    codec.py     hash, pack and bounded unpack: worker and hub compute them the same way
    index.py     requirements of a prompt, a catalog prepared for matching, catalog unions
    prompt.py    the API-format prompt's shape, checked without recursion
    validate.py  ComfyUI's own validation, with its error shapes
"""
