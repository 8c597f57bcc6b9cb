"""``python -m regnet`` (also the ``regnet`` command)."""
from regnet.train.cli import main

if __name__ == "__main__":
    main()
