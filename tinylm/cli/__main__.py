from tinylm.cli.main import main

main()
