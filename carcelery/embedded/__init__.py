"""The embedded default, for one machine offline: the AWS emulator (moto), the
local detector's weights, and the demo that runs the whole pipeline on them."""
