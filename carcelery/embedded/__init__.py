"""The embedded default, for one machine offline: the AWS emulator (moto) and the
demo that runs the whole pipeline on it."""
