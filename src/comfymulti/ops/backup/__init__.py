"""Backup sets to S3-compatible storage (Cloudflare R2) and tiered restore.

Objects are content-addressed (PREFIX/SET/blobs/ab/<sha256>), so an unchanged or renamed file is
never sent twice; each run's manifest (PREFIX/SET/manifests/RUN.json) maps paths to them.
"""
