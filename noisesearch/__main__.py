from noisesearch.cli import main

main()
