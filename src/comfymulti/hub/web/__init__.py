"""HTTP plumbing shared by every router: who is asking, bodies with limits, error shapes,
sessions and rate limits."""
