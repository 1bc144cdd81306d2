"""A fake DigitalOcean account for the lab: the API and metadata service stand-in.

The lab's nodes run the same fencing and failover agents as production, and
those talk to api.digitalocean.com and 169.254.169.254; this package answers the
handful of endpoints they use. Modules, each importing only those before it:

- account: the state (droplets, reserved IPs, actions and their progression,
  faults to inject, the hook that makes actions real), and the API's errors;
- shapes: that state as JSON, as DigitalOcean's OpenAPI schemas have it;
- views: API routing, pagination, and the metadata service;
- server: HTTP, `running` (tests), `serve` and the CLI (`python -m lab.fake_do`);
- openapi: the published schemas as JSON Schema, which tests check answers against.
"""
