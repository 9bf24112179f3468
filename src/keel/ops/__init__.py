"""Operator tools: dead-letter inspection and replay (`keel dlq`), the `/ops` API and its console page."""
