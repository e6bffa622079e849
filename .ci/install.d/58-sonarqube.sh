#!/usr/bin/env bash
# Real SonarQube for the SonarQube tests: the distribution zip Maven Central
# publishes as org.sonarsource.sonarqube:sonar-application. Nautes pins 9.5,
# which Maven Central does not carry (its versions jump from 8.9.0 to
# 9.9.0); 9.9.0 is the nearest, with the same web services we call. It runs
# on Java 17 with its embedded H2 database and Elasticsearch, which refuses
# to run as root: the tests run it as the system user `sonarqube`.
set -euo pipefail
version=9.9.0.65466
cache=/opt/nautes-ci/cache/sonarqube
home="$cache/sonarqube-$version"
if ! [ -f "$home/lib/sonar-application-$version.jar" ]; then
  command -v java >/dev/null || apt-get install -y -q openjdk-17-jre-headless
  command -v mvn >/dev/null || apt-get install -y -q maven
  command -v unzip >/dev/null || apt-get install -y -q unzip
  mvn -B -q dependency:get -Dartifact="org.sonarsource.sonarqube:sonar-application:$version:zip" -Dtransitive=false
  zip="$HOME/.m2/repository/org/sonarsource/sonarqube/sonar-application/$version/sonar-application-$version.zip"
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/.unpack.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  unzip -q "$zip" -d "$work"
  rm -rf "$home"
  chmod -R a+rX "$work"
  mv "$work/sonarqube-$version" "$home"
fi
id sonarqube >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin sonarqube
# Each test gives SonarQube its own data, temp and logs directories
# (sonar.path.*); the rest is shared and read-only, but for the plugin
# download directory SonarQube insists on creating.
mkdir -p "$home/extensions/downloads"
chown sonarqube "$home/extensions/downloads"
echo "SonarQube $version in $home"
