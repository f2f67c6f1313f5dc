"""The GPU tooling, by what each part measures: `check` (gpu-check: parity, speed, memory, settings
and compiled boots against the hosted code), `quick` (gpu-quick: the deployment's settings matrix,
then the hosted defaults on full-size stand-ins, in one short run), and what they share."""
