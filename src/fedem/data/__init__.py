"""Raw datasets: where they come from (registry), how they are read (parsers), how they are obtained and verified (fetch)."""
