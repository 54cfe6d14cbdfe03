"""The GPU machine's side: the startup script that brings a node up."""
