"""Small shared utilities (atomic file writes, checksums, seeding)."""
