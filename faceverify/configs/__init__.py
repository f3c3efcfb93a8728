"""Example training configs (TOML); installed as faceverify.configs so that `faceverify train --config NAME`
finds them without a checkout."""
