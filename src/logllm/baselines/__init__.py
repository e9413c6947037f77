"""The paper's baselines on the same prepared data: one module per method, a shared harness.

`base` holds the interface (`Method`, `MethodInput`, `Resources`, `REGISTRY`); `templates` fits
Drain on the training split; `harness.run_bench` (and `logllm bench`) runs the registered methods
on a prepared folder and writes the comparison table. Modules are imported by
`harness.load_methods()`, so importing this package stays cheap.
"""
