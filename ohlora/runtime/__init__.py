"""Process runtime shared by every service: server, config, logging, metrics, devices."""
