"""config — one TOML file into frozen, validated dataclasses.

SYNOPSIS
    from postgate.config import load_config, ConfigError
    config = load_config(Path("/etc/postgate/postgate.toml"))
    problems = validate_files(config)          # at server start
    print("\\n".join(effective_config_lines(config)))

DESCRIPTION
    Every error names the file, the line and the dotted key. Unknown sections and
    keys are errors. Relative paths resolve against the config file's directory.
    Config is immutable: a reload builds a new Config and the server swaps it in.

    config.model   the dataclasses and every key's definition (default, parser, why)
    config.values  parsers for single values (sizes, durations, domains, networks)
    config.locate  line numbers of TOML keys, for error messages
    config.parse   load_config, parse_config
    config.render  effective_config_lines, default_config_text
    config.check   validate_files

SEE ALSO
    docs/configuration.md (every key, its default and why)
"""

from postgate.config.check import validate_files
from postgate.config.model import (
    SASL_MECHANISMS,
    AuthConfig,
    Config,
    ConfigError,
    ConfigProblem,
    DeliveryConfig,
    DkimConfig,
    LimitsConfig,
    ListenerConfig,
    ListenerRole,
    LogConfig,
    MailauthConfig,
    QueueConfig,
    RoutingConfig,
    TlsConfig,
)
from postgate.config.parse import load_config, parse_config
from postgate.config.render import default_config_text, effective_config_lines

__all__ = [
    "SASL_MECHANISMS",
    "AuthConfig",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "DeliveryConfig",
    "DkimConfig",
    "LimitsConfig",
    "ListenerConfig",
    "ListenerRole",
    "LogConfig",
    "MailauthConfig",
    "QueueConfig",
    "RoutingConfig",
    "TlsConfig",
    "default_config_text",
    "effective_config_lines",
    "load_config",
    "parse_config",
    "validate_files",
]
