"""The video service (seed 003): video records, a durable HLS job per upload, playlists served over HTTP."""
