"""The scripted assistant's domain: data (domain.json) and the matcher."""
