"""Tags (标签): groups, tags, who holds them (per WeCom relation or per person), event-tag rules."""
