"""The embedded archive's file store: a directory or S3-compatible object storage."""
