"""Training the text's models: workloads, data, the Keras model, modes, workers, the runner."""
