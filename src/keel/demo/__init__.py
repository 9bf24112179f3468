"""`keel demo`: a short scenario through every service of a running platform, over its public APIs."""
