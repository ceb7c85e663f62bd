"""The operator's configuration: the TOML file, the precedence of flags, env and file, declared resources, reload."""
