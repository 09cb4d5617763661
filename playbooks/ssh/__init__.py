"""SSH: keys, the bounded fan-out, the head's SFTP-only sshd, detached daemons."""
