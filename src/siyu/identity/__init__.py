"""Identity resolution: normalising identities and stitching them into one person."""
