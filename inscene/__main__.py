"""`python -m inscene` runs the CLI."""

from inscene.cli import main

if __name__ == "__main__":
    main()
