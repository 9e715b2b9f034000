"""moods-pipeline: keeps aesthetic.computer moods in step between MongoDB and ATProto repos."""

MOOD_COLLECTION = "computer.aesthetic.mood"
