"""do-ha-stack: read and validate config, build the stack, export its outputs."""

import pulumi

from infra import config
from infra.stack import HaStack

stack = HaStack(config.load())
for key, value in stack.outputs.items():
    pulumi.export(key, value)
