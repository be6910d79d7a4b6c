"""``python -m safepredict`` runs the command line."""

from safepredict.cli import main

if __name__ == "__main__":
    main()
