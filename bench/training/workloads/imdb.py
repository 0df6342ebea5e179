"""IMDB movie reviews, positive or negative (Deep Learning with Python, chapter 3)."""

from bench.training.workloads.spec import KerasDataFile, Workload

IMDB = Workload(
    name="imdb",
    title="IMDB reviews, binary sentiment",
    dataset="imdb",
    data_file=KerasDataFile(
        "imdb.npz", "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"
    ),
    num_words=10_000,
    # model = keras.Sequential([Dense(16, "relu"), Dense(16, "relu"), Dense(1, "sigmoid")])
    hidden_units=(16, 16),
    hidden_activation="relu",
    output_units=1,
    output_activation="sigmoid",
    labels="binary",
    # model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
    loss="binary_crossentropy",
    optimizer="rmsprop",
    metrics=("accuracy",),
    # x_val = x_train[:10000]; partial_x_train = x_train[10000:]
    validation_samples=10_000,
    # model.fit(partial_x_train, partial_y_train, epochs=20, batch_size=512, ...)
    epochs=20,
    batch_size=512,
    target_accuracy=0.88,
    synthetic_words_per_sample=132,  # 131.7 distinct words per training review
    synthetic_train_samples=25_000,
    synthetic_test_samples=25_000,
    reference="Deep Learning with Python, chapter 3, section 3.4 (first edition)",
)
