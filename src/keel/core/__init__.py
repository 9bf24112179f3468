"""The platform every Keel service stands on."""
