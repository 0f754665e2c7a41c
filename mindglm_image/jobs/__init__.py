"""Long-running jobs (batch generation over many prompts), resumable and shardable across msrun ranks."""
