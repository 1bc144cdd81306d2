"""A fake DigitalOcean account for the lab: the API and metadata service stand-in."""
