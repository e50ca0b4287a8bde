"""Contracts between the steps: the config schema, the feature spec, the stage manifest, and helpers every
component shares. The bottom layer: imports nothing else of nmtrec."""
