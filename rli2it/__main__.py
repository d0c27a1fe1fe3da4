import sys

from rli2it_med.cli.main import main

sys.exit(main())
