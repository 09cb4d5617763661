"""What tests/ and bench/ share: fixtures, fakes of the clouds, loopback servers; imported as
``tests.support.<name>`` (the repository is on pytest's path, see pyproject.toml), never by editing sys.path."""
