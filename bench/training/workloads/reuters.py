"""Reuters newswires, 46 topics (Deep Learning with Python, chapter 3)."""

from bench.training.workloads.spec import KerasDataFile, Workload

REUTERS = Workload(
    name="reuters",
    title="Reuters newswires, 46 topics",
    dataset="reuters",
    data_file=KerasDataFile(
        "reuters.npz", "d6586e694ee56d7a4e65172e12b3e987c03096cb01eab99753921ef915959916"
    ),
    num_words=10_000,
    # model = keras.Sequential([Dense(64, "relu"), Dense(64, "relu"), Dense(46, "softmax")])
    hidden_units=(64, 64),
    hidden_activation="relu",
    output_units=46,
    output_activation="softmax",
    # y_train = to_categorical(train_labels)
    labels="one_hot",
    loss="categorical_crossentropy",
    optimizer="rmsprop",
    metrics=("accuracy",),
    # x_val = x_train[:1000]; partial_x_train = x_train[1000:]
    validation_samples=1_000,
    epochs=20,
    batch_size=512,
    target_accuracy=0.80,
    synthetic_words_per_sample=82,  # 81.7 distinct words per training newswire
    synthetic_train_samples=8_982,
    synthetic_test_samples=2_246,
    reference="Deep Learning with Python, chapter 3, section 3.5 (first edition)",
)
