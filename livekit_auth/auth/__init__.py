"""The JSON API: issuing and checking keys."""
