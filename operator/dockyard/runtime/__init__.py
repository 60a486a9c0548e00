"""Code that runs inside the Pods Dockyard creates (profiling/training Jobs, model fetch,
serving). Heavy dependencies (pandas, scikit-learn, mlflow, MLServer) are imported lazily
by the entrypoints so the operator image never needs them."""
