"""The demo's module group: the project's own ShapesNet family (``source: psychinterp``), the shapes-world
images it is trained on, and small image folders for tests and examples. The generator itself does not need it."""
