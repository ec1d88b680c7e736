"""Running a mount: the mount process, its admin socket, systemd notification, the embedded S3 server, offline admin commands."""
