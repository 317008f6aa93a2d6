import os, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, keras
files = sys.argv[1].split("+"); hidden = int(sys.argv[2]); drop = float(sys.argv[3]); wd = float(sys.argv[4])
parts = [np.load(f) for f in files]
x = np.concatenate([d["x"].astype(np.float32) for d in parts], 1)
labels = sorted(set(parts[0]["labels"])); y = np.array([labels.index(l) for l in parts[0]["labels"]])
split = parts[0]["split"]; tr, va, te = split == "train", split == "validation", split == "test"
vals, tests = [], []
for seed in range(5):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((x.shape[1],)), keras.layers.Dropout(0.2)]
    if hidden: layers += [keras.layers.Dense(hidden, activation="relu", kernel_regularizer=keras.regularizers.l2(wd)), keras.layers.Dropout(drop)]
    layers += [keras.layers.Dense(len(labels), activation="softmax", kernel_regularizer=keras.regularizers.l2(wd))]
    m = keras.Sequential(layers)
    m.compile(keras.optimizers.Adam(1e-3), keras.losses.CategoricalCrossentropy(label_smoothing=0.1), metrics=["accuracy"])
    yy = keras.utils.to_categorical(y, len(labels))
    m.fit(x[tr], yy[tr], validation_data=(x[va], yy[va]), epochs=100, batch_size=64, verbose=0,
          callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=8, restore_best_weights=True)])
    p = m.predict(x, verbose=0)
    vals.append(round(float(np.mean(p[va].argmax(1) == y[va])), 4)); tests.append(round(float(np.mean(p[te].argmax(1) == y[te])), 4))
print(json.dumps({"files": sys.argv[1], "hidden": hidden, "drop": drop, "wd": wd, "val": vals, "val_mean": round(float(np.mean(vals)),4), "test": tests, "test_median": float(np.median(tests))}), flush=True)
